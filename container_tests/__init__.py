"""`make image-test` (container_tests/image_test.py) and its parts."""
