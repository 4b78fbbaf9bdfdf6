"""The byte-stream machinery of a backup: compress, seal in frames, hash; and back.

Pure Python with no Django: ``codecs`` (streaming compressors, bounded
decompressors), ``crypto`` (frame ciphers, key-encryption keys, key records)
and ``container`` (the on-storage format, EncodingStream and DecodingStream).
docs/container.md describes the bytes.
"""

# The names alone, apart from the modules that implement them, so that the
# catalog's choice lists need neither the compression libraries nor cryptography.
CODECS = ("none", "gzip", "bzip2", "zstd", "lz4")
CIPHERS = ("none", "aes-256-gcm", "chacha20-poly1305", "aes-256-cbc")
