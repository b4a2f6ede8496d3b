"""Names and MusicBrainz ids of the Last.fm catalogue: UUIDs, artist names and track titles in many scripts."""

from __future__ import annotations

import numpy as np

# Word pools for names, per script ("en" plain English, others add non-ASCII names).
WORDS = {
    "en": (
        "Blue Night Summer Love Dream Fire Heart Light Shadow River Electric Golden Silent Broken Paper Glass Ocean "
        "Star Machine City Ghost Wild Velvet Neon Morning Rain Stone Echo Kingdom Satellite Orange Winter Secret Sugar "
        "Radio Mirror Crystal Honey Thunder Lonely Happy Strange Young Midnight Diamond Highway Garden Empire Wolves "
        "Sun Moon Black White Red Silver Sweet Cold Dark Bright Lost Little Big Last First Never Forever Tonight "
        "Yesterday Home Road Sky Window Door Fever Static Signal Circus Parade Riot Echoes Horizon Harbor Island"
    ).split(),
    "ja": "東京 夜 花 空 桜 月 恋 夢 雨 風 光 海 星 青い 季節 約束 未来 涙 さくら ひかり ソング ライト サマー メロディー ナイト 君 僕 ありがとう 世界 永遠".split(),
    "ko": "사랑 밤 하늘 별 꿈 너 우리 오늘 바람 눈물 기억 노래 시간 마음 처음 안녕 여름 겨울".split(),
    "ru": "Кино Звезда Ночь Город Весна Группа Крови Мечта Ветер Солнце Дорога Небо Любовь Река Зима Песня".split(),
    "es": "Corazón Canción Mañana Árbol Sueño Niña Más Café Pájaro Señor Amor Ação Coração Música Alegría Vida".split(),
    "de": "Straße Mädchen Früh Schön Über Kälte Größe Nächte Träume Müde Wärme Stück Glück Kraftwerk Fußgänger".split(),
    "fi": "Yö Tähti Sydän Myrsky Jää Kuolema Pimeä Lumi Metsä Tuli Sielu Öinen Ääni Kylmä Susi".split(),
    "is": "Hoppípolla Sæglópur Glósóli Ágætis Svefn Fjöll Ljós Vaka Heima Jökull Á Íslandi Hafið Dögun".split(),
}
FIRST_NAMES = {
    "en": "John Mary David Sarah Michael Emma James Lucy Robert Anna Tom Kate Chris Laura Peter Nina Paul Amy".split(),
    "ja": "坂本 矢野 細野 高橋 山下 中田 宇多田 椎名 浜崎 久石".split(),
    "ko": "김 이 박 최 정 강 조 윤".split(),
    "ru": "Виктор Борис Алла Земфира Юрий Илья Дмитрий Ольга".split(),
    "es": "José María Inés Joaquín Sebastián Lucía Andrés Martín".split(),
    "de": "Jürgen Björn Günter Jörg Sören Käthe Hans Anna".split(),
    "fi": "Mikko Jussi Päivi Tuomas Sämi Aki".split(),
    "is": "Jónsi Björk Sigurður Ólafur Ásgeir Þór".split(),
}
LAST_NAMES = {
    "en": "Smith Jones Brown Taylor Wilson Evans Walker Wright Hall Green Baker Hill Moore Young Clark Lewis".split(),
    "ja": "龍一 顕子 晴臣 幸宏 達郎 康隆 ヒカル 林檎 あゆみ 譲".split(),
    "ko": "민수 지은 서연 하늘 태양 유진 수지 준호".split(),
    "ru": "Цой Гребенщиков Пугачёва Шевчук Лагутенко Земфира".split(),
    "es": "García Núñez Peña Domínguez Gómez Rodríguez Muñoz Sánchez".split(),
    "de": "Müller Schäfer Groß Köhler Weiß Krüger Fröhlich Böhm".split(),
    "fi": "Mäkinen Virtanen Häkkinen Järvinen Nieminen".split(),
    "is": "Birgisson Guðmundsdóttir Ólafsson Arnalds Þórsson".split(),
}
TRACK_SUFFIXES = [" (Live)", " (Remix)", " (Radio Edit)", " (Acoustic)", " - Demo", " (Original Mix)", " Pt. 2"]


def uuids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random version-4 UUIDs as lowercase 8-4-4-4-12 strings (MusicBrainz ids look like this)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.stack([raw >> 4, raw & 0x0F], axis=2).reshape(n, 32)
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = {0: 8, 20: 12}.get(src, 4)
        chars[:, dst : dst + width] = hex_digits[nibbles[:, src : src + width]]
    return chars.view("S36").ravel().astype("U36").tolist()


def artist_names(rng: np.random.Generator, scripts: list[str]) -> list[str]:
    """One artist name per entry of ``scripts`` (pattern and words drawn per artist)."""
    n = len(scripts)
    pattern = rng.integers(0, 6, size=n)
    a, b, c = (rng.random(n) for _ in range(3))
    names = []
    for i, script in enumerate(scripts):
        words, first, last = WORDS[script], FIRST_NAMES[script], LAST_NAMES[script]
        w1, w2 = words[int(a[i] * len(words))], words[int(b[i] * len(words))]
        f, l = first[int(a[i] * len(first))], last[int(c[i] * len(last))]
        p = pattern[i]
        if script in ("ja", "ko") and p < 3:
            names.append(f + l)
        elif p == 0:
            names.append(f"{f} {l}")
        elif p == 1:
            names.append(f"The {w1} {w2}s" if script == "en" else f"{w1} {w2}")
        elif p == 2:
            names.append(w1)
        elif p == 3:
            names.append(f"{w1} {w2}")
        elif p == 4:
            names.append(f"DJ {w1}" if c[i] < 0.5 else f"{f} & The {w1}s")
        else:
            names.append(f"{w1} {words[int(c[i] * len(words))]}")
    return names


def track_names(rng: np.random.Generator, scripts: list[str]) -> list[str]:
    """One track title per entry of ``scripts``, with the odd "(Live)"/"(Remix)" suffix."""
    n = len(scripts)
    a, b, c, d = (rng.random(n) for _ in range(4))
    suffix = rng.integers(0, len(TRACK_SUFFIXES), size=n)
    names = []
    for i, script in enumerate(scripts):
        words = WORDS[script]
        w1, w2, w3 = words[int(a[i] * len(words))], words[int(b[i] * len(words))], words[int(c[i] * len(words))]
        if d[i] < 0.35:
            title = f"{w1} {w2}"
        elif d[i] < 0.55:
            title = w1
        elif d[i] < 0.7:
            title = f"{w1} {w2} {w3}"
        elif d[i] < 0.8:
            title = f"{w1} of {w2}" if script == "en" else f"{w1}の{w2}" if script == "ja" else f"{w1} {w2}"
        else:
            title = f"{w1} {w2}{TRACK_SUFFIXES[suffix[i]]}"
        names.append(title)
    return names
