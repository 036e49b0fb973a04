"""Facts about the dataset layout that every stage shares: ``<root>/<split>/<count>/<image>``."""

SPLITS = ("train", "val", "test")
MAX_COUNT = 5  # counts 0..MAX_COUNT, one class each
NUM_CLASSES = MAX_COUNT + 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
