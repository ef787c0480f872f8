"""The app's widgets, each usable (and tested) on its own in a small host App."""

from .answer import AnswerView
from .history import HistoryList
from .memory_gauge import MemoryGauge
from .question_form import QuestionForm
from .run_settings import RunSettings
from .stage_table import StageTable
from .stream_panel import StreamPanel
from .trace_column import TraceColumn

__all__ = ["AnswerView", "HistoryList", "MemoryGauge", "QuestionForm", "RunSettings", "StageTable",
           "StreamPanel", "TraceColumn"]
