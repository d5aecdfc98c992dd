"""The data pipeline, from a data path to decoded, labelled train/val/test sets:

- :mod:`~galaxytune.data.formats` picks the reader for a path (one per source, in
  :mod:`~galaxytune.data.readers`: folders, CSV catalogs, Galaxy Zoo tables, HDF5, FITS);
- :mod:`~galaxytune.data.csv_table` is the one CSV reader (plain or .gz) they share;
- :mod:`~galaxytune.data.vote_labels` labels vote tables (rules parsed by :mod:`~galaxytune.data.label_rules`;
  per-question answer counts found by :mod:`~galaxytune.data.questions`);
- every reader gives :class:`~galaxytune.data.samples.Sample` lists per split name (:mod:`~galaxytune.data.samples`);
- :mod:`~galaxytune.data.splits` completes and records the splits, :mod:`~galaxytune.data.images` decodes
  (:mod:`~galaxytune.data.pixels` scales to 8 bits), :mod:`~galaxytune.data.leakage` finds duplicates
  across splits, and :mod:`~galaxytune.data.prepare` runs it all; :mod:`~galaxytune.data.transforms`
  augments batches in training.
"""
