"""Safe YAML loading that remembers where every key came from.

The storyboard and preset schemas report errors by key path (`shots.2.duration`);
this module turns such a path back into a line number of the source file, and
rejects what PyYAML silently accepts (duplicate keys). Only SafeLoader is used:
no Python object is ever constructed from a YAML tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longvid.errors import StoryboardError


@dataclass(frozen=True)
class YamlDoc:
    path: str
    data: dict[str, Any]
    root: yaml.Node

    def line_of(self, loc: tuple[str | int, ...]) -> int:
        """1-based line of the deepest node of `loc` that exists in the file."""
        node, line = self.root, self.root.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next((kv for kv in node.value if kv[0].value == str(part)), None)
                if match is None:
                    return line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def error(self, loc: tuple[str | int, ...], message: str, hint: str = "") -> StoryboardError:
        key = ".".join(str(p) for p in loc)
        return StoryboardError(message, hint, path=self.path, line=self.line_of(loc), key=key)


def load_yaml(path: Path, what: str = "storyboard") -> YamlDoc:
    """Read a YAML mapping from `path`, or raise a StoryboardError that says why not."""
    shown = str(path)
    if not path.is_file():
        raise StoryboardError(
            f"{what} file not found", "check the path; it is relative to the current directory",
            path=shown,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoryboardError(f"cannot read the {what}: {exc}", "save it as UTF-8 text",
                              path=shown) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise StoryboardError(
            f"YAML tags that construct objects are not allowed ({exc.problem})",
            "remove the `!!...` tag: longvid reads plain YAML values only",
            path=shown, line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StoryboardError(
            f"not valid YAML: {problem}",
            "check indentation and quoting on that line (tabs are not allowed in YAML; "
            "quote values that contain ': ' or start with a special character)",
            path=shown, line=mark.line + 1 if mark else None,
        ) from None
    if not isinstance(data, dict) or root is None:
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise StoryboardError(
            f"the {what} must be a YAML mapping of keys (version, shots, ...), but it is {kind}",
            "start from storyboards/quickstart.yaml", path=shown,
            line=root.start_mark.line + 1 if root is not None else None,
        )
    _reject_duplicate_keys(root, shown)
    return YamlDoc(shown, data, root)


def _reject_duplicate_keys(node: yaml.Node, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.value in seen:
                raise StoryboardError(
                    f"key {key.value!r} appears twice in one mapping (first on line "
                    f"{seen[key.value]})", "keep one of them; YAML would silently use the last",
                    path=path, line=line, key=str(key.value),
                )
            seen[key.value] = line
            _reject_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path)
