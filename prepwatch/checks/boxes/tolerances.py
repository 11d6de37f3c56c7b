"""The alignment probe's tolerances, measured on correct transforms (why: alignment.py)."""

RESULTS = ("aligned", "misaligned", "inconclusive")
MISALIGNMENT_KINDS = ("iou", "offset", "out_of_bounds", "foreign", "phantom")

EDGE_TOLERANCE_PX = 0.5
NEAREST_EXTRA_PX = 1.0
ROTATED_EDGE_PX = 1.5
CENTROID_TOLERANCE_PX = 2.0
# A misalignment whose box still overlaps its object (IoU >= 0.5) by at most this many
# pixels is an "offset" (a convention slip); anything worse is "iou" (box off its object).
OFFSET_KIND_MAX_PX = 2.0
# A region whose centroid is this close to the centre of its enclosing box is treated as
# centrally symmetric (a parallelogram: any affine image of a rectangle).
SYMMETRY_PX = 0.5
# Below this many marked pixels a region is too small to measure.
MIN_EVIDENCE_PX = 4.0
# A kept box at least this large whose object left no marked pixels is a phantom; a
# smaller one may hold an object too faint to see after downscaling.
PHANTOM_MIN_AREA_PX = 16.0
