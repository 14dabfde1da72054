"""The Belle II neuroresults text format: tab separated, line 1 the column names, line 2 empty.

Reading is validated (every malformed file ends in one `DataFormatError` line "path:line: what") and
fast: line-aligned blocks parsed by pandas' C parser with explicit dtypes on every core while the next
block is inflated (isal) or read, and a cache of the parsed columns keyed by the sha256 of the file's bytes.

Modules, each importing only those above it:
    format   the columns, their dtypes and value ranges, `NO_EXPERT`, `DataFormatError`
    text     a file's bytes: gzip members inflated (isal), pieces, line-aligned blocks, line bounds
    cache    the parsed columns cached under the sha256 of the file's bytes (`file_hash`, `CACHE_DIR`)
    reader   `read_neuroresults`: parse on every core, validate, diagnose a malformed file
    writer   `write_table`, `write_predictions`
"""
