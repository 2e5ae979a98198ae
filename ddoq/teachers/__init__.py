"""Teachers: the classifiers that soft-label a distilled set (pipeline stage: label).

data -> encode -> quantize -> decode -> **label** -> train -> export

- `ddoq.teachers.model`: the `Teacher` (a classifier taking images in [0, 1] of any size
  and channel count) and `load_teacher` (the embedded one, a ``ddoq train-teacher`` folder,
  a torchvision classifier);
- `ddoq.teachers.selection`: which teacher labels a dataset (`resolve_teacher`, matched by
  class name, ``"auto"`` by default) and why (`Selection`);
- `ddoq.teachers.training`: ``ddoq train-teacher`` (`train_teacher`); only the command
  line and the app import it.

The labels themselves (``softmax(logits / T)``) are `ddoq.labels`.
"""

from ddoq.teachers.model import AUTO, EMBEDDED_TEACHER_DIR, Teacher, load_teacher
from ddoq.teachers.selection import (
    Selection,
    cached_teachers,
    class_mapping,
    match_teacher,
    resolve_teacher,
    teacher_dir_for,
    teacher_for_set,
    teachers_root,
)

__all__ = [
    "AUTO",
    "EMBEDDED_TEACHER_DIR",
    "Selection",
    "Teacher",
    "cached_teachers",
    "class_mapping",
    "load_teacher",
    "match_teacher",
    "resolve_teacher",
    "teacher_dir_for",
    "teacher_for_set",
    "teachers_root",
]
