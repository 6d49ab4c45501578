"""longvid: author long AI videos from a YAML storyboard on one consumer GPU.

Nothing heavy is imported here: `longvid plan` and `--help` must stay instant.
"""

__version__ = "0.1.0"
