"""The words answers are stated with, one table per language (English, Chinese).

Why tables: a judge whose cue words are spread through its regexes reads only the
language it was written in; teachers answer Chinese prompts in Chinese (答案是…, 故选…,
最终答案…, 是的 / 不是). Every reader builds its patterns from here, so a language is added
in one place. The English entries are the phrasings of the model cards and harness
prompts the corpus cites; the Chinese ones are those of Qwen, GLM, Kimi, InternVL and
ERNIE replies to Chinese prompts (tests/fixtures/answers/families*.jsonl).
"""

from __future__ import annotations

import re


def _alternatives(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


# Words that open a concluding sentence.
EN_CLOSING = ("so", "thus", "therefore", "hence", "overall", "consequently", "finally",
              "in conclusion", "in summary", "in total", "to conclude", "to summarize",
              "altogether", "as a result", "yes", "no")
ZH_CLOSING = ("所以", "因此", "故", "综上所述", "综上", "总之", "由此可见", "由此可知", "可见",
              "答案", "最终答案", "是的", "不是")

# "答案是 X", "最终答案：X", "故选 B": the Chinese answer statements (the English ones are
# the extractor's label and "the answer is" patterns).
ZH_ANSWER_IS = ("最终答案", "正确答案", "答案")
ZH_ANSWER_VERB = ("应该是", "应为", "是", "为")
ZH_PICK = ("故选", "所以选", "因此选", "应选", "答案选", "选择")

# Yes / no replies. A Chinese reply opens with its verdict ("是的，猫在桌子上").
ZH_YES = ("是的", "是", "对", "有", "正确")
ZH_NO = ("不是", "不对", "不", "否", "没有", "错误", "并不")

# Avowed doubt: no answer, whatever the statement also names ("可能是40或26，无法确定").
ZH_DOUBT = ("无法确定", "不能确定", "不确定", "无法判断", "难以判断", "无法看清", "看不清",
            "无法得知", "无法回答")
# A conclusion label ("结论：是的", "答：不是").
ZH_LABELS = ("结论", "答")
# An answer stated as an opinion ("我认为是12", "I'd say 12").
ZH_OPINION = ("我认为是", "我觉得是", "我认为", "我觉得")

# Sentence ends, both scripts.
SENTENCE_END_CHARS = ".!?。！？"
QUESTION_MARKS = "?？"

CLOSING_CUE = re.compile(
    r"^(?:(?:" + _alternatives(EN_CLOSING) + r")\b|(?:" + _alternatives(ZH_CLOSING) + r"))",
    re.IGNORECASE)
ZH_STATEMENT = re.compile(
    r"(?:" + _alternatives(ZH_ANSWER_IS) + r")[ \t]*(?:" + _alternatives(ZH_ANSWER_VERB)
    + r")?[ \t]*[:：]?(?!否)|(?:" + _alternatives(ZH_PICK + ZH_OPINION) + r")[ \t]*[:：]?|"
    + r"(?<![回解问])(?:" + _alternatives(ZH_LABELS) + r")[ \t]*[:：]")
ZH_DOUBT_PATTERN = re.compile(_alternatives(ZH_DOUBT))
ZH_LEAD = re.compile(r"^(?:" + _alternatives(ZH_CLOSING[:8]) + r")[，,、\s]*")
ZH_YES_NO = re.compile(r"^(?:(" + _alternatives(ZH_NO) + r")|(" + _alternatives(ZH_YES) + r"))")
CJK = re.compile(r"[\u3400-\u9fff]")
