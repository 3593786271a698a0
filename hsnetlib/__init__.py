"""hsnetlib: Hypercorrelation Squeeze Networks (Min, Kang, Cho, ICCV 2021) for few-shot segmentation."""
__version__ = "0.1.0"
