"""The Open Inference Protocol's (KServe V2) binary BYTES tensor layout, read in one place: the
predictor decodes requests with it (serving/app.py), the feedback app's payload-logger sink decodes
logged requests and answers (feedback/labelling/endpoint_payloads.py).

    bytes_elements(data, name) -> [element, ...]   ValueError naming the tensor and the element

Each element is a 4-byte little-endian length, then that many bytes.
"""

from __future__ import annotations

import struct


def bytes_elements(data: bytes, name: str) -> list[bytes]:
    """The elements of the BYTES tensor `name` held in `data`; ValueError when the data ends inside
    an element's length or an element claims more bytes than are left."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError(f"input {name!r}: binary data ends inside the 4-byte length of element {len(elements)}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError(f"input {name!r}: binary element {len(elements)} claims {length} bytes, "
                             f"{len(data) - offset} are left")
        elements.append(data[offset:offset + length])
        offset += length
    return elements
