"""The byte-stream machinery of a backup: compress, seal in frames, hash; and back.

Pure Python with no Django: ``codecs`` (streaming compressors, bounded
decompressors), ``crypto`` (frame ciphers, key-encryption keys, key records)
and ``container`` (the on-storage format, EncodingStream and DecodingStream).
docs/container.md describes the bytes.
"""
