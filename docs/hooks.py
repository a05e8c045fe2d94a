"""MkDocs hook: the generated Markdown that pages include from benchmarks/ (pymdownx.snippets) links
its figures as ``../docs/images/X``, from that folder; on a page of the site they are ``images/X``."""

from __future__ import annotations

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor

FROM_BENCHMARKS = "](../docs/images/"


class _ImagesFromBenchmarks(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return [line.replace(FROM_BENCHMARKS, "](images/") for line in lines]


class _Extension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 (Markdown's name)
        # after pymdownx.snippets (priority 32) has included the files
        md.preprocessors.register(_ImagesFromBenchmarks(md), "images_from_benchmarks", 31)


def on_config(config):
    """Adds the preprocessor to the site's Markdown extensions."""
    config.markdown_extensions.append(_Extension())
    return config
