"""CLI options that several commands share, declared once.

`image_options` adds --size, --mean, --std and --layout: how a folder of images becomes the model's input, for
prune's --calib-images and verify's --data-images; `image_options_for` turns their values into ImageOptions.
"""

from __future__ import annotations

from typing import Optional

import click

from .calib import ImageOptions, parse_floats, parse_size
from .errors import OptionError

IMAGE_FOLDER_OPTIONS = "--calib-images, --data-images"

_IMAGE_OPTIONS = (
    click.option("--size", default=None, metavar="HxW",
                 help=f"Images ({IMAGE_FOLDER_OPTIONS}): resize to this (default: the model's)."),
    click.option("--mean", default="0", show_default=True, metavar="M[,M,M]",
                 help="Images: subtracted after /255."),
    click.option("--std", default="1", show_default=True, metavar="S[,S,S]", help="Images: divided by, after --mean."),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True,
                 help="Images: the model input's layout."),
)


def image_options(command):
    """Decorator: the image options (--size, --mean, --std, --layout) on a click command."""
    for option in reversed(_IMAGE_OPTIONS):
        command = option(command)
    return command


def image_options_for(folder, folder_option: str, size: Optional[str], mean: str, std: str,
                      layout: str) -> Optional[ImageOptions]:
    """ImageOptions for the image folder given with `folder_option`, or None without one; an image option set
    on the command line without a folder is an OptionError (it would change nothing)."""
    if folder is None:
        ctx = click.get_current_context(silent=True)
        for name in ("size", "mean", "std", "layout"):
            if ctx is not None and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise OptionError(f"--{name} is for {folder_option}: it applies to images only")
        return None
    return ImageOptions(parse_size(size) if size else None, parse_floats(mean, "--mean"),
                        parse_floats(std, "--std"), layout)
