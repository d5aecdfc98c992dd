"""One reader per kind of source, each giving :class:`galaxytune.data.samples.Sample` lists:
image folders, CSV catalogs, Galaxy Zoo vote tables, HDF5 files and FITS cutouts.
:mod:`galaxytune.data.formats` picks the reader for a data path."""
