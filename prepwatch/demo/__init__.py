"""`prepwatch demo`: a real (small, CPU) training job that shows every signal."""

FAULTS = ("starvation", "io", "overaug", "normalization", "boxes", "video")
EXTRAS = ("classes", "normalization", "geometry")
