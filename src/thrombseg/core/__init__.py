"""The base layer every stage stands on; it imports no torch, ANTs or plotting library.

``sequences`` (the sequence/label contract), ``case`` (the harmonized-case reader), ``io`` (atomic
file writes, NIfTI and JSON), ``fs`` (output folders that never cost a user's files), ``layout``
(every results path), ``errors`` (the user-facing error type).
"""
