"""`make image-test` (images/image_test.py) and its parts."""
