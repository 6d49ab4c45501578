"""Safe YAML loading that remembers where every key came from.

The storyboard and preset schemas report errors by key path (`shots.2.duration`);
this module turns such a path back into a line number of the source file, and
rejects what PyYAML silently accepts (duplicate keys). Only SafeLoader is used:
no Python object is ever constructed from a YAML tag.

Plain scalars follow YAML 1.2's core schema, not PyYAML's YAML 1.1: `yes`, `on`
and `no` stay words, `1:30` stays a string (a time), and an integer written with a
leading zero (`010`, octal 8 in YAML 1.1, while `09` is 9) is refused. Aliases are
followed once per node and nesting is bounded, so a small file cannot cost minutes.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longvid.errors import StoryboardError

MAX_DEPTH = 32  # storyboards nest 4 deep; presets 3
MAX_NODES = 200_000  # distinct nodes; a 20,000-shot storyboard has ~100,000
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema plain scalars and a bounded nesting depth."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # before Python's own recursion limit is near
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if node.style is None and _LEADING_ZERO.match(text):
        raise yaml.constructor.ConstructorError(
            None, None, f"{text} has a leading zero (YAML 1.1 would read {text} as octal)",
            node.start_mark)
    return int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)

_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE = "a lone UTF-16 surrogate"  # in the message of a string that has one


def unicode_text(text: str) -> str | None:
    """`text` as valid Unicode, or None. A surrogate pair written as two escapes
    ("\\ud83d\\ude00", as JSON writers do; PyYAML keeps them apart) becomes its character;
    a lone surrogate (an escape of half a pair, or undecodable bytes in a command-line
    argument) cannot be written to a file, a video's metadata or a terminal."""
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> str:
    text = unicode_text(loader.construct_scalar(node))
    if text is None:
        raise yaml.constructor.ConstructorError(
            None, None, f"this string holds {LONE_SURROGATE} (half of a \\uXXXX pair)",
            node.start_mark)
    return text


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


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


STDIN = "-"  # a storyboard path that means: read it from standard input
_piped_texts: dict[str, bytes] = {}  # what a pipe held: it can be read only once


def is_piped(path: Path) -> bool:
    """A source without a file of its own: `-` (standard input), or a pipe such as the
    shell's `<(command)` or /dev/stdin. Its relative paths start from the current folder,
    and it has no name to give a video."""
    return str(path) == STDIN or (path.exists() and not path.is_file() and not path.is_dir())


def source_folder(path: Path) -> Path:
    """Where the source's relative paths (images, audio, LoRAs, `output:`) start."""
    return Path.cwd() if is_piped(path) else path.parent


def source_stem(path: Path) -> str:
    """The name a source gives its video and title: its file's stem; `stdin` when piped."""
    return "stdin" if is_piped(path) else path.stem


def source_label(path: Path) -> str:
    """How progress lines name the source: its file's name; `stdin` when piped."""
    return "stdin" if is_piped(path) else path.name


def source_id(path: Path) -> str:
    """How results (`--json`'s `source`) name it: its absolute path; `-` for stdin."""
    return STDIN if str(path) == STDIN else str(path.absolute())


def shown_path(path: Path) -> str:
    """How error messages name the source: its path; `<stdin>` for standard input."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _read_text(path: Path) -> str:
    """The text of a file, or of standard input or a pipe (read once, then remembered:
    `render` reads a storyboard more than once), with newlines as read_text gives them."""
    if not is_piped(path):
        return path.read_text(encoding="utf-8")
    key = str(path)
    if key not in _piped_texts:
        _piped_texts[key] = sys.stdin.buffer.read() if key == STDIN else path.read_bytes()
    return _piped_texts[key].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def load_yaml(path: Path, what: str = "storyboard") -> YamlDoc:
    """Read a YAML mapping from `path` (`-`: standard input), or raise a StoryboardError
    that says why not."""
    shown = shown_path(path)
    if path.is_dir():
        raise StoryboardError(f"a folder, not a {what} file",
                              f"name the {what}'s .yaml file", path=shown)
    if not path.is_file() and not is_piped(path):
        raise StoryboardError(
            f"{what} file not found", "check the path; it is relative to the current directory",
            path=shown,
        )
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise StoryboardError(f"cannot read the {what}: {exc}", "save it as UTF-8 text",
                              path=shown) from None
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                _check_shape(root, shown)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except RecursionError:
        raise StoryboardError(f"the {what} is nested too deeply",
                              f"a {what} nests a few levels; remove the extra brackets",
                              path=shown) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!float 32x32`
        raise StoryboardError(f"a tagged value is not what its tag says ({str(exc)[:80]})",
                              "remove the `!!...` tag: longvid reads plain YAML values only",
                              path=shown) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        problem = str(exc.problem)
        if "leading zero" in problem:
            hint = "write the number without the zero (8 or 10), or quote it"
        elif LONE_SURROGATE in problem:
            hint = ("write the character itself (UTF-8), or its \\UXXXXXXXX escape, or both "
                    "halves of its \\uXXXX pair")
        else:
            problem = f"YAML tags that construct objects are not allowed ({problem})"
            hint = "remove the `!!...` tag: longvid reads plain YAML values only"
        raise StoryboardError(problem, hint, path=shown,
                              line=mark.line + 1 if mark else None) from None
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


def _check_shape(root: yaml.Node, path: str) -> None:
    """Depth and size bounded; each node (an alias is the node it names) visited once."""
    seen: set[int] = set()
    todo = [(root, 1)]
    while todo:
        node, depth = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH or len(seen) > MAX_NODES:
            too = f"nested more than {MAX_DEPTH} levels deep" if depth > MAX_DEPTH \
                else f"larger than {MAX_NODES} values"
            raise StoryboardError(f"the file is {too}",
                                  "a storyboard nests a few levels; check for runaway "
                                  "brackets or aliases", path=path,
                                  line=node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            todo += [(value, depth + 1) for _, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(item, depth + 1) for item in node.value]


def _reject_duplicate_keys(root: yaml.Node, path: str) -> None:
    seen_nodes: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue  # an alias: its node was checked where it was defined
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise StoryboardError(
                        f"key {key.value!r} appears twice in one mapping (first on line "
                        f"{seen[key.value]})", "keep one of them; YAML would silently use the "
                        "last", path=path, line=line, key=str(key.value),
                    )
                seen[key.value] = line
                todo.append(value)
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
