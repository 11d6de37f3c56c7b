"""The input guard's tolerances and the statistics the contract keeps (why: docs/inputs.md)."""

# Per-batch false-alarm target of every statistical call the guard makes: one in a
# million checked batches when images within a batch are independent.
FALSE_ALARM_TARGET = 1e-6
# Pooled channel-order test (see _channel_order_evidence): a batch is judged once its expected mean
# chromaticity lies POOLED_SEPARATION standard errors from zero, and called swapped or
# confirmed when its mean lies POOLED_CALL standard errors on one side: a correctly served
# batch is called swapped with p = Phi(-(4 + 2)) ~ 1e-9, a swapped one is missed with
# p <= Phi(-(4 - 2)) ~ 2% at the smallest batch, less for larger ones.
POOLED_SEPARATION = 4.0
POOLED_CALL = 2.0
POOLED_MAX_BATCH = 1024  # beyond that the data is colour-neutral for practical purposes
# Headroom beyond the support before a value counts as outside, as a share of the
# range: interpolation (bicubic resize) overshoots sharp edges by a few percent.
SUPPORT_MARGIN = 0.05
# Share of grid pixels that must sit outside before a batch is off the contract's
# range: a few overshooting or corrupt pixels are not a pipeline mistake.
OUTSIDE_SHARE = 0.01
PERCENTILES = (0.1, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 99.9)
# Coverage tolerance floor, a share of the range: the false-alarm guarantee comes from
# the per-image chance rates; reaching within 10% of both ends is a second condition,
# on the batch's content, not the one that bounds false alarms.
COVERAGE_FLOOR = 0.1
COVERAGE_CAP = 0.25  # beyond a quarter of the range "reaching the end" means little
# Robust range (0.01% / 99.99%) and coverage (0.1% / 99.9%) quantiles of recorded pixels.
RANGE_QUANTILES = (0.0001, 0.9999, 0.001, 0.999)
