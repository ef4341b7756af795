"""catdog.v2_binary: the V2 binary BYTES layout the predictor and the payload-logger sink both read."""

import struct

import pytest

from catdog.v2_binary import bytes_elements


def packed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_elements_come_back_in_order_empty_ones_too():
    assert bytes_elements(packed(b"ab", b"", b"xyz"), "image_bytes") == [b"ab", b"", b"xyz"]
    assert bytes_elements(b"", "image_bytes") == []


@pytest.mark.parametrize("data, words", [
    (packed(b"ab")[:3], "ends inside the 4-byte length of element 0"),
    (packed(b"ab", b"cdef")[:-1], "element 1 claims 4 bytes, 3 are left"),
])
def test_truncated_data_names_the_tensor_and_the_element(data, words):
    with pytest.raises(ValueError, match="'image_bytes'") as raised:
        bytes_elements(data, "image_bytes")
    assert words in str(raised.value)
