"""Names in the scripts of KKBOX's languages: artists, song titles, composer and lyricist lists."""

from __future__ import annotations

import numpy as np

SCRIPT_OF_LANGUAGE = {52: "en", -1: "en", 3: "zh", 10: "zh", 24: "zh", 17: "ja", 31: "ko", 59: "en", 45: "en", 38: "en"}

WORDS = {
    "en": ("Love Night Summer Heart Dream Forever Baby Girl Fire Rain Home Light Stay Tonight Without You Me Alone "
           "Shape Closer Faded Happy Sorry Secret Lonely Sugar Perfect Wild Young Stars Wonderful Dance Crazy Hello "
           "Goodbye Remember Ocean Blue Better Tomorrow Let Go Free Moment Story Sky").split(),
    "zh": "我們 原諒我 愛 你 的 心 夢 雨 天空 永遠 時間 回憶 幸福 寂寞 眼淚 朋友 告白 世界 青春 花 月亮 一個人 等待 溫柔 再見".split(),
    "ja": "恋 夢 桜 空 君 未来 約束 涙 さくら ひかり 世界 ありがとう 夜空 季節 メロディー".split(),
    "ko": "사랑 너 우리 오늘 밤 별 꿈 기억 눈물 하늘 처음 안녕 노래 마음".split(),
}
SURNAMES = {
    "en": "Smith Johnson Brown Lee Martin Garcia Wilson Clark Lewis Walker Young King Wright Lopez Hill Green".split(),
    "zh": "陳 林 黃 張 李 王 吳 劉 蔡 楊 許 鄭 謝 郭 洪 曾 周 董 何 方".split(),
    "ja": "佐藤 鈴木 高橋 田中 渡辺 伊藤 山本 中村 小林 加藤".split(),
    "ko": "김 이 박 최 정 강 조 윤 장 임".split(),
}
GIVEN = {
    "en": "Max Taylor Chris Jordan Alex Sam Jamie Katy Ed Justin Bruno Ariana Shawn Charlie Sia Adam Ryan Dua".split(),
    "zh": "啟弘 貞 信哲 志明 偉 華 美玲 怡君 宏 文傑 子 雨 安 心怡 家豪 俊傑 淑芬 雅婷".split(),
    "ja": "健太 翔 結衣 陽菜 蓮 美咲 大輝 さくら 拓海 葵".split(),
    "ko": "민수 지은 서연 태양 유진 수지 준호 하늘 지민 윤아".split(),
}
INSTRUMENTAL_ARTISTS = ["Various Artists", "Piano Cafe", "Relaxing Music", "Bach Collegium Japan"]
STAGE_NAMES = "TEDDY FUTURE BOUNCE Bekuh BOOM G-DRAGON TAEYANG ZICO YG Max Martin Shellback Ilya".split()
ROMANIZED = "Jeff Chang Jay Chou Eason Chan Jolin Tsai A-Mei JJ Lin Mayday Hebe Tien G.E.M.".split()


def person_name(rng: np.random.Generator, script: str) -> str:
    """One person name in ``script`` (Chinese names without a space, others "Given Surname")."""
    sur, given = SURNAMES[script], GIVEN[script]
    s, g = sur[int(rng.integers(len(sur)))], given[int(rng.integers(len(given)))]
    return s + g if script in ("zh", "ja", "ko") else f"{g} {s}"


def artist_names(rng: np.random.Generator, languages: np.ndarray) -> list[str]:
    """Artist names matching each language's script, with romanized aliases and bands."""
    names = []
    for lang in languages.tolist():
        script = SCRIPT_OF_LANGUAGE[lang]
        r = rng.random()
        if script == "zh" and r < 0.3:
            names.append(f"{person_name(rng, 'zh')} ({ROMANIZED[int(rng.integers(len(ROMANIZED)))]})")
        elif script == "ko" and r < 0.5:
            names.append("".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ"), size=int(rng.integers(3, 10)))))
        elif script == "en" and r < 0.35:
            words = WORDS["en"]
            names.append("The " + words[int(rng.integers(len(words)))] + "s" if r < 0.2
                         else f"{words[int(rng.integers(len(words)))]} & {words[int(rng.integers(len(words)))]}")
        elif lang == -1 and r < 0.5:
            names.append(INSTRUMENTAL_ARTISTS[int(rng.integers(len(INSTRUMENTAL_ARTISTS)))])
        else:
            names.append(person_name(rng, script))
    return names


def song_title(rng: np.random.Generator, script: str, r: float) -> str:
    """A song title; ``r`` picks rare shapes (quotes, commas, the "| " that KKBOX put where commas were)."""
    words = WORDS[script]
    w = [words[int(i)] for i in rng.integers(0, len(words), size=3)]
    sep = "" if script in ("zh", "ja") else " "
    title = sep.join(w[: 1 + int(rng.integers(0, 3))])
    if r < 0.008:
        title += f' (From "{WORDS["en"][int(rng.integers(len(WORDS["en"])))]} Story")'
    elif r < 0.011:
        title = f"{title}, {w[2]}"
    elif r < 0.016:
        title = f"Concerto No. {int(rng.integers(1, 20))} in E Major| Op. {int(rng.integers(1, 90))}"
    elif r < 0.0167:
        title = f"{title}\u00a0{w[2]}"
    elif r < 0.03:
        title += " (feat. " + person_name(rng, "en") + ")"
    return title


def people_list(rng: np.random.Generator, script: str, first: str | None = None) -> str:
    """Composer/lyricist field: 1-5 names joined by "| " (sometimes "|  "), rarely with a quoted nickname."""
    n = 1 + min(int(rng.geometric(0.5)) - 1, 4)
    people = [first] if first else []
    while len(people) < n:
        r = rng.random()
        if r < 0.05:
            people.append(STAGE_NAMES[int(rng.integers(len(STAGE_NAMES)))])
        elif r < 0.06:
            people.append(f'{GIVEN["en"][int(rng.integers(18))]} "{STAGE_NAMES[int(rng.integers(10))]}" Thiam')
        else:
            people.append(person_name(rng, script))
    sep = "|  " if rng.random() < 0.15 else "| "
    return sep.join(people)
