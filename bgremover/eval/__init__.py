"""`rmbg eval`: how accurate each model is on datasets that come with ground-truth masks.

Predictions are written to an output folder first (one PNG per image, per model and
dataset), so an interrupted run resumes where it stopped and a new metric or a new
model never means recomputing the others. The figures themselves all come from
pysodmetrics, a Python port of the MATLAB reference code behind the published SOD and
DIS5K tables, so that the numbers can be put next to those tables; this module only
feeds it and never computes a metric itself.
"""
