"""Phone recognition: corpora, training and the shrink-and-eliminate study.

- :mod:`deltarnn.speech.datasets`: TIMIT and the eSpeak NG corpus, features, scoring;
- :mod:`deltarnn.speech.train`: training per-frame recognisers;
- :mod:`deltarnn.speech.study`: widths, skipped paths and thresholds, on Dask;
- :mod:`deltarnn.speech.synthetic`: a tiny frame-labelling task that trains in seconds.
"""
