"""The words and symbols answers are written with in each language, from the tables that
define them, each entry citing its source.

Why here and not in the regexes: a judge whose cue words are spread through its patterns
reads only the languages it was written in. The extractor, the option reader, the yes/no
reader and the number reader build their patterns from these tables, so a language is one
row here. English and Chinese phrasings that no harness table lists (the ones this judge
was first built on) stay in ``phrases``.

Sources (read, not copied; commits of the snapshots read):

* ``SE_MMMLU``: openai/simple-evals @ ee3b0318 ``common.py``:
  ``MULTILINGUAL_ANSWER_REGEXES`` (the "Answer:" of each language MMMLU replies use),
  ``MULTILINGUAL_ANSWER_PATTERN_TEMPLATE`` and ``normalize_extracted_answer`` (Arabic,
  Bengali and full-width option letters).
* ``SE_MGSM``: openai/simple-evals @ ee3b0318 ``mgsm_eval.py:LANG_TO_ANSWER_PREFIX``.
* ``LE_MGSM``: EleutherAI/lm-evaluation-harness @ 4e7e0d47
  ``lm_eval/tasks/mgsm/native_cot/mgsm_native_cot_*.yaml``: the "The answer is N" sentence
  each language's few-shot exemplars end with (``regex_pattern``) and the next exemplar's
  question header the harness stops at (``until``).
* ``LE_PAWSX`` / ``LE_XNLI``: the same harness, ``lm_eval/tasks/paws-x/_generate_config.py``
  (YES / NO) and ``lm_eval/tasks/xnli/utils.py`` (ENTAILMENT / CONTRADICTION labels,
  used as yes / no; xnli's Arabic CONTRADICTION_LABEL "رقم" means "number" and is left out).
* ``CLDR``: decimal and group symbols of each locale, CLDR 47 as Babel 2.19.0 reports them
  (``babel.numbers.get_decimal_symbol`` / ``get_group_symbol``); kept as a table so the
  judge does not depend on Babel at run time.
* ``REAL``: phrasings real outputs write and no table above lists (laihuiyuan/mCoT @
  20e9a862 ``outputs/``: "Die Antwort ist", "উত্তর হল", "Ответ:"; the tuned cases of
  tests/fixtures/answers/real_labels.jsonl cite the rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SE_MMMLU = "openai/simple-evals common.py MULTILINGUAL_ANSWER_REGEXES"
SE_LETTERS = "openai/simple-evals common.py normalize_extracted_answer"
SE_MGSM = "openai/simple-evals mgsm_eval.py LANG_TO_ANSWER_PREFIX"
LE_MGSM = "lm-evaluation-harness tasks/mgsm/native_cot/mgsm_native_cot_{lang}.yaml"
LE_PAWSX = "lm-evaluation-harness tasks/paws-x/_generate_config.py"
LE_XNLI = "lm-evaluation-harness tasks/xnli/utils.py"
CLDR = "CLDR 47 via Babel 2.19.0 get_decimal_symbol / get_group_symbol"
REAL = "real outputs, laihuiyuan/mCoT outputs/ (tests/fixtures/answers/real_labels.jsonl)"


@dataclass(frozen=True)
class Entry:
    """One word or phrase, the language it belongs to and where it was taken from."""

    text: str
    lang: str
    source: str


def _entries(source: str, rows: dict[str, tuple[str, ...]]) -> tuple[Entry, ...]:
    return tuple(Entry(text, lang, source) for lang, texts in rows.items() for text in texts)


# "Answer:" in each language: a label, always followed by ':' or '：' in the output.
ANSWER_LABELS: tuple[Entry, ...] = (
    *_entries(SE_MMMLU, {
        "bn": ("উত্তর", "উত্তরঃ"), "hi": ("उत्तर",), "de": ("Antwort",),
        "ko": ("답변", "정답", "답"), "zh": ("答案", "答", "答复", "答曰"),
        "ar": ("الإجابة", "الجواب", "إجابة", "الإجابة النهائية", "الإجابة الصحيحة",
               "الإجابة الصحيحة هي", "الإجابة هي", "الجواب النهائي"),
        "es": ("Respuesta",), "it": ("Risposta",), "ja": ("答え", "回答", "解答"),
        "id": ("Jawaban",), "fr": ("Réponse",), "pt": ("Resposta",), "sw": ("Jibu",),
        "yo": ("Idahun", "Ìdáhùn", "Idáhùn", "Àdáhùn"),
    }),
    *_entries(SE_MGSM, {"ru": ("Ответ",), "te": ("సమాధానం",), "th": ("คำตอบ",)}),
)

# "The answer is N": the sentence a chain of thought ends with, in each language.
ANSWER_SENTENCES: tuple[Entry, ...] = (
    *_entries(LE_MGSM, {
        "de": ("Die Antwort lautet",), "es": ("La respuesta es",), "fr": ("La réponse est",),
        "ja": ("答えは",), "ru": ("Ответ —",), "sw": ("Jibu ni",), "te": ("సమాధానం",),
        "th": ("คำตอบคือ",), "zh": ("答案是",),
    }),
    *_entries(REAL, {"de": ("Die Antwort ist",), "bn": ("উত্তর হল", "উত্তর"),
                     "ru": ("Ответ –", "Ответ -")}),
)

# The header of the next few-shot exemplar: a base model that runs on past its answer
# writes one; the harness stops generation there, so what follows is not the reply.
FEWSHOT_HEADERS: tuple[Entry, ...] = (
    *_entries(LE_MGSM, {
        "en": ("Question:",), "de": ("Frage:",), "es": ("Pregunta:",), "fr": ("Question :",),
        "ja": ("問題：",), "ru": ("Задача:",), "sw": ("Swali:",), "te": ("ప్రశ్న:",),
        "th": ("โจทย์:",), "zh": ("问题：",), "bn": ("প্রশ্ন:",),
    }),
    # TheoremQA's few-shot prompt (TIGER-AI-Lab/TheoremQA run.py) heads exemplars "Problem:".
    Entry("Problem:", "en", "TIGER-AI-Lab/TheoremQA run.py few-shot prompt"),
)

YES_WORDS: tuple[Entry, ...] = (
    *_entries(LE_PAWSX, {"de": ("ja",), "es": ("sí",), "fr": ("oui",), "ja": ("はい",),
                         "ko": ("예",)}),
    *_entries(LE_XNLI, {"ar": ("نعم",), "bg": ("да",), "el": ("ναί", "ναι"), "hi": ("हाँ",),
                        "ru": ("да",), "sw": ("ndiyo",), "th": ("ใช่",), "tr": ("evet",),
                        "ur": ("جی ہاں",), "vi": ("vâng",)}),
)
NO_WORDS: tuple[Entry, ...] = (
    *_entries(LE_PAWSX, {"de": ("nein",), "fr": ("non",), "ja": ("いいえ",), "ko": ("아니요",)}),
    *_entries(LE_XNLI, {"bg": ("не",), "el": ("όχι",), "hi": ("नहीं",), "ru": ("нет",),
                        "sw": ("hapana",), "th": ("ไม่",), "tr": ("hayır",), "ur": ("نہیں",),
                        "vi": ("không",)}),
)

# Option letters in other scripts, by position. Arabic and Bengali: simple-evals; Cyrillic
# and Greek: the first letters of each alphabet, as Russian (А Б В Г Д) and Greek
# (Α Β Γ Δ Ε) exam questions label options; no harness table lists them (simple-evals and
# the lm-evaluation-harness tasks were searched), so they are read only where an option
# letter is expected. Full-width Ａ-Ｄ need no entry: NFKC folds them.
OPTION_LETTERS: tuple[tuple[str, str, str], ...] = (
    *((foreign, latin, SE_LETTERS) for foreign, latin in zip("أبجد", "ABCD", strict=True)),
    *((foreign, latin, SE_LETTERS) for foreign, latin in zip("অবডঢ", "ABCD", strict=True)),
    *((foreign, latin, "Cyrillic alphabet order") for foreign, latin
      in zip("АБВГДЕ", "ABCDEF", strict=True)),
    *((foreign, latin, "Greek alphabet order") for foreign, latin
      in zip("ΑΒΓΔΕΖ", "ABCDEF", strict=True)),
)

# Decimal separator by language (CLDR). Languages not listed write a decimal point.
DECIMAL_COMMA = frozenset({"de", "es", "fr", "ru", "it", "pt", "id", "vi", "tr", "pl", "nl",
                           "uk", "el", "cs", "sv", "bg"})
DECIMAL_POINT = frozenset({"en", "bn", "ja", "sw", "te", "th", "zh", "ko", "ar", "hi", "yo",
                           "ur"})


def decimal_of(lang: str | None) -> str | None:
    """'comma', 'point', or None when the language is unknown or not in the table."""
    if lang is None:
        return None
    base = lang.split("-")[0].split("_")[0].lower()
    return "comma" if base in DECIMAL_COMMA else "point" if base in DECIMAL_POINT else None


def alternatives(texts: list[str] | tuple[str, ...]) -> str:
    """A regex alternation of ``texts``, longest first (so 'Ответ —' wins over 'Ответ')."""
    return "|".join(re.escape(text) for text in sorted(set(texts), key=len, reverse=True))


def language_of(text: str, entries: tuple[Entry, ...]) -> str | None:
    """The language of the entry ``text`` is, or None."""
    folded = text.casefold()
    return next((entry.lang for entry in entries if entry.text.casefold() == folded), None)
