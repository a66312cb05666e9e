"""Training loops, one plain loop per stage (``python -m fastsr.train <stage> --help``).

prune   train RRDB → record eq. 8 dissimilarities → RRSB connection config → train RRSB
"""
