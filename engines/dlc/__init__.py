"""DeepLabCut's own files: shuffle folders, snapshots, scorers, splits and metadata pickles.

What posed needs to read a DeepLabCut project's models and split in place, and to write files
that DeepLabCut's tools read. Nothing here imports DeepLabCut or a framework.
"""
