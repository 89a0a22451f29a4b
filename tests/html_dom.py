"""
A small DOM built with the standard library's HTML parser, so tests can ask
structural questions of a page ("the row of operation 5", "the diagram node
marked current") instead of searching its text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

#: Elements that never have content, so never get an end tag.
VOID = {"meta", "link", "br", "hr", "img", "input", "area", "base", "col", "source", "wbr"}


@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, match: Callable[[Element], bool]) -> list[Element]:
        return [e for e in self.iter() if match(e)]

    def by_tag(self, tag: str) -> list[Element]:
        return self.find_all(lambda e: e.tag == tag)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {n: v or "" for n, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str | bytes) -> Element:
    builder = _Builder()
    builder.feed(page.decode() if isinstance(page, bytes) else page)
    builder.close()
    return builder.root


def current_node_titles(scope: Element) -> list[str]:
    """
    The titles (state names) of the diagram nodes marked ``current``.
    """
    nodes = scope.find_all(lambda e: e.tag == "g" and {"node", "current"} <= e.classes())
    return [title.text for node in nodes for title in node.by_tag("title")]


def node_fills(scope: Element) -> dict[str, str]:
    """
    Each diagram node's title and the fill of its first shape.
    """
    fills = {}
    for node in scope.find_all(lambda e: e.tag == "g" and "node" in e.classes()):
        titles = node.by_tag("title")
        shapes = [
            e for e in node.iter() if e.tag in ("path", "polygon", "ellipse") and "fill" in e.attrs
        ]
        if titles and shapes:
            fills[titles[0].text] = shapes[0].attrs["fill"]
    return fills
