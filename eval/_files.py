"""Writing results: the project's one atomic writer, :mod:`persam_files`.

``write_text_atomic`` and ``write_json_atomic`` are ``persam_files.write_text`` and
``persam_files.write_json`` (temp file in the same folder, fsync, rename; NaN written as null),
kept under these names as part of ``persam_eval``'s public API.
"""
from persam_files import json_safe, write_json as write_json_atomic, write_text as write_text_atomic

__all__ = ["json_safe", "write_json_atomic", "write_text_atomic"]
