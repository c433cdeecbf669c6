"""The JUnit export writes its test cases as text: escaped exactly as ElementTree escapes them."""

from __future__ import annotations

import random
from xml.etree import ElementTree

from database.results.export import _attribute, _text

CHARACTERS = "ab&<>\"'\r\n\t é&amp;"


def test_text_and_attributes_are_escaped_as_element_tree_escapes_them():
    generator = random.Random(7)
    for _ in range(5_000):
        text = "".join(generator.choice(CHARACTERS) for _ in range(generator.randint(0, 12)))
        element = ElementTree.Element("e", {"a": text})
        element.text = text
        assert ElementTree.tostring(element, encoding="unicode") == (
            f'<e a="{_attribute(text)}">{_text(text)}</e>' if text else '<e a="" />'
        ), repr(text)
