"""Facts about the dataset layout that every stage shares: ``<root>/<split>/<count>/<image>``."""

SPLITS = ("train", "val", "test")
MAX_COUNT = 5  # counts 0..MAX_COUNT, one class each
NUM_CLASSES = MAX_COUNT + 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def overflow_folder(max_count: int = MAX_COUNT) -> str:
    """Folder of the optional "more than max_count" class: ``6plus`` for max_count 5. Digits and
    letters only (valid on Windows, unlike ``>5``), and it sorts after the count folders."""
    return f"{max_count + 1}plus"
