"""One screen per file: the main screen and the modal dialogs it opens."""

from .dataset import DatasetScreen
from .export import ExportScreen
from .help import HelpScreen
from .main import MainScreen

__all__ = ["DatasetScreen", "ExportScreen", "HelpScreen", "MainScreen"]
