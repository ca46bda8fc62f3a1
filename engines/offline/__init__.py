"""Offline jobs over a loaded model or its output tables: analysing videos and images (one
process, a worker pool or a Ray cluster), evaluation against labels, filtering, labelled
videos, plots and NWB export."""
