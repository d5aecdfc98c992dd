"""Datasets galaxytune brings: the registry of public galaxy datasets, their downloader, and the
synthetic galaxies of ``galaxytune demo``. What reads a dataset once on disk is :mod:`galaxytune.data`."""
