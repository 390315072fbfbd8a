"""List the items of a raw face-image source: class folders, the FER2013 CSV, FERG-DB, JAFFE, flat,
and label files (a CSV/TSV/TXT of image paths, labels and optional face boxes: AffectNet, RAF-DB).

Listing only looks at names (and, for the CSV and label files, at each row's fields): decoding
images and pixel strings happens later, in the workers. Every input is accounted for: each file or
row becomes a `RawItem` or a `Failure` with a human-readable reason; only hidden names
(".DS_Store") and blank lines are skipped. Names come from the data: nothing here builds an output
path from them, and nothing outside the source is read.

Problems with the source as a whole raise `prepro.errors.InputError`; a FER2013 row whose pixels
cannot be read or parsed raises `BadPixelsError` (a `SampleError`: that row's failure).

One job per module:

    records.py          RawItem, Failure, Listing, SourceNotFoundError
    walker.py           walking folders, what cannot be used becomes a Failure
    names.py            what split, label and subject names in file and folder names say
    class_folders.py    ROOT/<label>/* and ROOT/<split>/<label>/*
    ferg.py             ROOT/<character>/<character>_<emotion>/*
    jaffe_and_flat.py   JAFFE-named images; unlabelled images
    fer2013_csv.py      the FER2013 CSV: its rows, and reading a row's pixels (CsvRowReader, parse_pixels)
    text_files.py       reading (gzipped) text files, and their read errors in words
    label_columns.py    where a label file's columns are
    label_rows.py       a label file's rows as items
    label_files.py      the label-file layout: its files and image folder
    formats.py          detect_format, list_source, count_mismatches

Split assignment is `prepro.splits`; its names are importable from here too, as are `FORMATS` and
`SPLITS` (defined in `prepro.specs`).
"""

from prepro.readers.class_folders import find_classes
from prepro.readers.fer2013_csv import BadPixelsError, CsvRowReader, parse_pixels, read_csv_pixels
from prepro.readers.formats import count_mismatches, detect_format, list_source
from prepro.readers.jaffe_and_flat import JAFFE_PATTERN
from prepro.readers.label_columns import BOX_HEADER_NAMES, LABEL_FILE_HEADER_NAMES, LABEL_FILE_SUFFIXES
from prepro.readers.names import FER2013_SPLIT_NAMES, SPLIT_FOLDER_NAMES
from prepro.readers.records import Failure, Listing, RawItem, SourceNotFoundError
from prepro.specs import FORMATS, SPLITS
from prepro.splits import assign_splits, order_key

__all__ = ["BOX_HEADER_NAMES", "BadPixelsError", "CsvRowReader", "FER2013_SPLIT_NAMES", "FORMATS", "Failure",
           "JAFFE_PATTERN", "LABEL_FILE_HEADER_NAMES", "LABEL_FILE_SUFFIXES", "Listing", "RawItem", "SPLITS",
           "SPLIT_FOLDER_NAMES", "SourceNotFoundError", "assign_splits", "count_mismatches", "detect_format",
           "find_classes", "list_source", "order_key", "parse_pixels", "read_csv_pixels"]
