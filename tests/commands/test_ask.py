"""What /ask does with the model's text before anyone sees it, as pure units."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from app.commands.ask import SOURCES_SHOWN, attributed, clean_answer, grounded, sources
from app.retrieval.search import jump_link
from app.store.models import StoredMessage


def message(n: int, text: str = "text", author: str = "u-ana", name: str = "Ana") -> StoredMessage:
    return StoredMessage(
        id=1_000_000 + n,
        channel_id="c1",
        guild_id="g1",
        author_id=author,
        author_name=name,
        content=text,
        timestamp=datetime(2023, 5, 8, tzinfo=UTC),
    )


QUOTED = [message(1), message(2), message(3)]


def test_source_numbers_become_the_cited_messages() -> None:
    answer, cited = clean_answer("adoption agencies [2]", QUOTED)
    assert (answer, cited) == ("adoption agencies", [QUOTED[1]])
    answer, cited = clean_answer("7 May 2023 [3] [1, 3] [9]", QUOTED)
    assert (answer, cited) == ("7 May 2023", [QUOTED[2], QUOTED[0]])


def test_only_the_first_line_of_an_answer_is_kept() -> None:
    assert clean_answer("7 years [1]\nAlso, the pottery / she said", QUOTED)[0] == "7 years"
    assert clean_answer("7 years now / Check out my pottery", QUOTED)[0] == "7 years now"


def test_links_other_than_the_sources_show_as_their_host_only() -> None:
    text = (
        "see [click here](https://exfil.example/c?d=BLUEHERON) and "
        "<https://exfil.example/log?secret=BLUEHERON> or www.exfil.example/x?s=BLUEHERON"
    )
    answer, _ = clean_answer(text, QUOTED)
    assert "BLUEHERON" not in answer and "https://" not in answer
    assert "click here (`exfil.example`)" in answer
    own = jump_link(QUOTED[0])
    assert clean_answer(f"here: {own}", QUOTED)[0] == f"here: {own}"
    assert clean_answer(f"[the plan]({own})", QUOTED)[0] == f"[the plan]({own})"


def test_an_answer_about_the_wrong_person_is_not_attributed() -> None:
    ana = {"u-ana": "Ana"}
    by_ana = message(1, "I painted a lake")
    by_ben = message(2, "Hey Ana! I painted a lake, how about you?", "u-ben", "Ben")
    about_ana = message(3, "Ana's painting of the lake won the prize", "u-ben", "Ben")
    to_ana = message(4, "your painting of the lake is lovely", "u-ben", "Ben")
    assert attributed([by_ana], ana)
    assert not attributed([by_ben], ana)
    assert attributed([about_ana], ana) and attributed([to_ana], ana)
    assert attributed([by_ben, by_ana], ana)
    # Her friend may be the one who answers; her family is told of by her or about her.
    assert attributed([by_ben], ana, "When did Ana's best friend adopt a child?")
    assert attributed([by_ben], ana, "What did Ana\u2019s colleague paint?")
    assert not attributed([by_ben], ana, "What did Ana paint?")
    assert not attributed([by_ben], ana, "What did Ana's son paint?")
    assert attributed([by_ana], ana, "What did Ana's son paint?")
    # Her own message that only asks Ben something says nothing of her.
    asks_ben = message(5, "Wow! What got you into painting lakes?")
    assert not attributed([asks_ben], ana, "What got Ana into painting lakes?")
    assert not attributed([message(6, "Nice, Ben! Did your kids like the lake?")], ana)
    # Asking back after saying something of herself, or of her family, still counts.
    assert attributed([message(7, "Painting lakes calms me down. Do you paint?")], ana)
    assert attributed([message(8, "We love that lake! Have you been?")], ana)
    assert attributed([message(9, "Painted a lake this morning, so relaxing. You?")], ana)
    # Nothing cited, or not exactly one member named: nothing to check.
    assert attributed([], ana)
    assert attributed([by_ben], {"u-ana": "Ana", "u-ben": "Ben"})


def test_an_answer_is_credited_to_the_quoted_line_that_holds_it() -> None:
    ana = {"u-ana": "Ana"}
    question = message(1, "Thanks Ben! You play any instruments?")
    reply = message(2, "Yeah, I play clarinet! Started when I was young.", "u-ben", "Ben")
    other = message(3, "See you at the concert", "u-ben", "Ben")
    quoted = [question, reply, other]
    lines = [f"[{i}] 8 May 2023, {m.author_name}: {m.content}" for i, m in enumerate(quoted, 1)]
    # The model cited Ana's question; the answer is in Ben's reply, which is not about Ana.
    cited = grounded("clarinet", [question], quoted, lines)
    assert cited == [reply]
    assert not attributed(cited, ana, "What instrument does Ana play?")
    # Nothing cited: the line holding the answer is the source.
    assert grounded("the clarinet", [], quoted, lines) == [reply]
    # A cited line that holds the answer stays, as does one no line holds better.
    assert grounded("clarinet [2]", [reply], quoted, lines) == [reply]
    assert grounded("8 May 2023", [other], quoted, lines) == [other]
    # Too little of the answer anywhere: the model's citation stands.
    assert grounded("a shiny golden trumpet", [question], quoted, lines) == [question]
    # Cited lines sharing some of the words stay after the source; the others go.
    assert grounded("clarinet when young, concert", [question, other], quoted, lines) == [
        reply,
        other,
    ]


def test_a_cited_message_never_pushes_a_best_hit_off_the_sources() -> None:
    hits = [
        replace(QUOTED[0], id=QUOTED[0].id + n, content=f"hit {n}")
        for n in range(SOURCES_SHOWN + 2)
    ]
    cited = replace(QUOTED[2], id=QUOTED[2].id + 100)
    links = [line.rsplit(" ", 1)[1] for line in sources([cited], hits).splitlines()[1:]]
    assert links == [jump_link(m) for m in [cited, *hits[:SOURCES_SHOWN]]]


def test_sources_list_the_cited_first() -> None:
    text = sources([QUOTED[2]], [QUOTED[0], QUOTED[2], QUOTED[1]])
    lines = text.splitlines()
    assert lines[0] == "**Sources**"
    assert lines[1].startswith("[1] Ana, 2023-05-08 (cited): ") and lines[1].endswith(
        jump_link(QUOTED[2])
    )
    assert [line.rsplit(" ", 1)[1] for line in lines[2:]] == [
        jump_link(QUOTED[0]),
        jump_link(QUOTED[1]),
    ]
