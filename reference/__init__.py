"""The published reference algorithms, per image, as the definition of correct.

The tests compare augmix/ against these functions and the benchmarks time augmix/ against them.
They follow Hendrycks & Dietterich's make_cifar_c.py / make_imagenet_c.py (corruptions) and the
AugMix reference's augmentations.py (PIL ops) statement by statement, with the constants written
out as those scripts have them, so a wrong constant or formula in augmix/ fails a test instead of
being copied into the check. Nothing here is installed with the package: tests and benchmarks put
the repository root on sys.path.
"""
