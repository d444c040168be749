# ruff: noqa: E501  (prompt prose: Chinese lines cannot be wrapped at word boundaries)
"""The words of the REER prompts, in English and Chinese. Written for this project: the instructions,
their order, the tags and the prefills follow the authors' released synthesis code (see
docs/FIDELITY.md, rows S*), the wording is ours.

Each prompt is assembled from parts so that the think-aloud requirements read the same in the
initial prompt (which shows the answer y) and in the scorer's prompt (which does not, and asks for
a draft instead of an outline), and so that the no-reflection ablation swaps exactly one part.
Placeholders: {task}, {solution}, {before}, {segment}, {after}.
"""

from __future__ import annotations

from typing import Dict

EN: Dict[str, str] = {}
ZH: Dict[str, str] = {}

# The reflection triggers with their examples, the same in the think-aloud and the refinement prompts.
_EXAMPLES_EN = """
    - Hmm, maybe .. (another concrete idea about the request)
    - Let me think ..
    - Wait, no ..
    - But wait .. (finding a flaw in an earlier thought)
    - Wait, that is a bit .. (questioning an earlier decision). Let me think .. (weighing other options)
    - Wait, the user said .. (going back to what was given). So ..
    - Hmm... Alternatively, maybe .. (trying another branch)
    - But .."""
_EXAMPLES_ZH = """
    - 嗯，也许……（关于这个请求的另一个具体想法）
    - 让我想想……
    - 等等，不对……
    - 不过等等……（发现之前的想法有问题）
    - 等等，这有点……（反思之前的决定）。让我想想……（考虑别的可能）
    - 等等，用户说……（回到已知信息）。所以……
    - 嗯……或者，也许……（换一个思路）
    - 但是……"""

# --- English ------------------------------------------------------------------------------------------

EN["head_initial"] = """You are an expert writer who knows many fields. You are about to give the response below to a \
task, and I need you to write down the thinking that comes before it as well.
The task:
{task}

The response you will write:
{solution}

Write down the thinking behind this response as if you were thinking aloud and brainstorming before \
writing it. Explore the task thoroughly and at length: analyse, summarise, explore, reassess, reflect, go \
back and iterate until the thinking is well worked out. Put the whole thinking inside one single \
`<think></think>` block."""

EN["head_scorer"] = """You are an expert writer who knows many fields. You will write a response to the task below, \
and I need you to write down the thinking that comes before it as well.
The task:
{task}

First think aloud and brainstorm in your head. Explore the task thoroughly and at length: analyse, summarise, \
explore, reassess, reflect, go back and iterate until the thinking is well worked out. Put the whole \
thinking inside one single `<think></think>` block."""

EN["requirements"] = """The thinking must meet these requirements:

1.  **First person, thinking aloud and brainstorming**
    Always speak as "I", brainstorming in your head, in spoken, simple words.

2.  **The thinking and the response are one**
    Each part of the thinking must match a part of the response, so that a reader watches the thoughts \
grow step by step into the finished piece and the piece reads as their natural outcome.

3.  **Voice: planning, sincere, natural, plain**
    You are analysing and planning before you write the response. Use plain words that anyone can \
follow, and explain hard ideas simply instead of reaching for jargon.

4.  **Flow: clear and progressive**

5.  **A framework for deep thinking**
    To keep the thinking clear and deep and to show how you plan the piece, it may cover the following.

    Intent and task: before writing a word, I work out why this piece is needed. First the real goal \
behind the literal request. Then: who am I talking to? I picture the reader precisely: their problems, \
their hopes, the moment in which they read. Then the core objective: how do I want the reader to feel, \
think and act once they have read it?

    Content: I brainstorm a central idea and a way of getting it across that serve the objective. Then I \
decide which content and key information the piece must carry, and which material it draws on.

    Structure: I plan the reader's path like a blueprint. First the skeleton (for example the Golden \
Circle "Why-How-What", AIDA "Attention-Interest-Desire-Action", or a story arc "Beginning-Development-\
Climax-Resolution"), then the key parts: how does the opening catch the reader, how is the body layered \
and the argument ordered, how does the ending sum up, lift the message and give a clear call to action?"""

EN["outline"] = """
    Outline: when the response is fairly long, I sketch an outline (or a draft) that grows out of the \
plan above: paragraph by paragraph, the key content and points, the shape of the sentences, anything \
that matters for that paragraph.
    I WILL NOT copy the response, I WILL NOT copy the response: the outline (or draft) is only a \
prototype or skeleton of the text. When it is done, I check once more for details to watch when I write \
the final response.
    The outline starts after a `--- Outline (or Draft) ---` line at the end of the thinking, inside the \
same `<think></think>` block."""

EN["draft"] = """
    Draft: unless the request is really easy, I write a draft from the plan before the final response. I \
turn the plan into paragraphs: the key points, the content and the sentence shapes of each. The draft is \
a prototype of the final text: much shorter and kept to a controlled length, but neither vague nor \
general, and not a copy of the final text. It starts after a `--- The Draft ---` line at the end of the \
thinking, inside the same `<think></think>` block. After the draft I critique it and note which details \
to improve or enrich (so that it leads more surely to the final response)."""

EN["reflect"] = (
    """
{num}Throughout the thinking, think deeply, plan, and critique yourself on purpose. Bring this on {often} \
with phrases such as `wait`, `maybe`, `let me`. For example:"""
    + _EXAMPLES_EN
)

EN["reflect_vary"] = """
I will vary these phrases and will NOT repeat the same one. I use them while working out the user's \
needs, the content and the structure, and when I weigh alternatives, go back or fill in details. I do \
NOT use them in the draft or as the thinking comes to its end."""

EN["plain"] = """
6. Throughout the thinking, think deeply and plan, reasoning steadily and directly: do not use hesitation \
or self-correction phrases such as `wait`, `hmm`, `maybe`, `let me` or `alternatively`."""

_NO_PAST_EN = """No past tense, NO PAST TENSE anywhere: this is the thinking before you write the final response, about \
what you will do and need to do."""
_MONOLOGUE_EN = """Think aloud and brainstorm: write it as an inner monologue, a stream of consciousness, without \
bullet points, numbering or formal section headings."""
# The initial prompt ends: no past tense, the monologue, then the request to write the thinking; the
# scorer's prompt asks for the thinking first and ends with the two rules (the reference's two orders).
EN["tail_initial"] = f"""
{_NO_PAST_EN}
{_MONOLOGUE_EN}
Now write your thinking inside `<think></think>` tags."""
EN["tail_scorer"] = f"""
Now write your clear, complete and logical thinking inside `<think></think>` tags.
{_NO_PAST_EN}
{_MONOLOGUE_EN}"""

EN["refine"] = """
You get a writing task, a target text and an existing thinking process, and you refine and enrich one \
paragraph of that thinking process.

---> **Writing task**
{task}
---> **Target text**
{solution}
---> **Thinking process**
{before}
<replace>
{segment}
</replace>
{after}

Build your reply with these three steps:

**Step 1:** Find the paragraph to revise in the thinking process. Given what surrounds it, what is its \
main job?

**Step 2:** Read the "Target text" and the paragraph to revise side by side, and ask yourself: does the \
thinking in this paragraph miss a key step, or is there content that could be refined and made more \
specific so that it lines up better with the target text?

**Step 3:** Improve the paragraph (it is one part of the thinking process).
- From your analysis, rewrite the paragraph into a better one, keeping its tone. Put the rewrite inside \
<refine></refine> tags.{refine_reflect}
- If the paragraph's job is to be a first draft of the text, work on its logic and completeness: the draft \
should state concrete content and a clear point of view, not a general outline. Ask whether it is a \
fitting prototype of the target text: neither vague nor a copy, but an early version of it.

Following this guide, refine **only** the part marked for replacement:
<replace>
{segment}
</replace>

{answer_shape}
Notes: a. Do not repeat yourself: use fewer repeated connecting words, do not restate the same meaning, \
and do not repeat what the surrounding context already says.
b. Keep the first few words of the original paragraph, above all its connecting words.
c. {note_c}
"""

EN["refine_reflect"] = (
    """
- To bring in deep thinking and planning, critique yourself on purpose in the thinking. Start this often \
with phrases such as `wait`, `maybe`, `let me`. For example:"""
    + _EXAMPLES_EN
)
EN["refine_plain"] = """
- Reason steadily and directly: no hesitation or self-correction phrases such as `wait`, `hmm`, `maybe` \
or `let me`."""
EN["note_reflect"] = "Use self-critique phrases such as `wait`, `maybe`, `let me`."
EN["note_plain"] = "Keep the reasoning direct, without hesitation phrases."
EN["answer_analysis"] = """In your reply, first give your analysis along the three steps inside `<analyze></analyze>` \
tags, and finally the refined paragraph of the **thinking process** inside `<refine></refine>` tags."""
EN["answer_only"] = """In your reply, give only the refined paragraph of the **thinking process** inside \
`<refine></refine>` tags."""
EN["refine_opening"] = (
    "Let me see what in this paragraph can be improved and enriched to line up better with the target text.\n"
)

# --- Chinese ------------------------------------------------------------------------------------------

ZH[
    "head_initial"
] = """你是一位通晓多个领域的写作专家。下面有一个用户请求，以及你将要写出的回答。请把你动笔之前的思考记录下来。
用户请求：
{task}

你将写出的回答：
{solution}

现在请写出这篇回答背后的思考过程，就像在脑海中头脑风暴一样，放在唯一的一个`<think></think>`标签中。"""

# The Chinese scorer prompt frames the task as explaining the thinking behind an answer (as the
# reference's does) and closes by asking for thinking as if the request were seen for the first time.
ZH[
    "head_scorer"
] = """你是一位通晓多个领域的专家。设想有一个用户请求，以及对它的一个回答。现在请你为这个回答讲出背后的思考过程，尤其是怎样围绕这个请求深入思考、深入规划。
用户请求：
{task}

现在请在脑海中头脑风暴，把完整的思考过程放在唯一的一个`<think></think>`标签中。"""

# The Chinese requirements, numbered in the initial prompt; the scorer's prompt has them unnumbered and
# without the "thinking and piece are one" item (as the reference's two Chinese prompts differ).
_ZH_VOICE = "叙述视角：用第一人称“我”，像在脑子里边想边说，演绎自己的创作思考。用口语化、通俗的表达。"
_ZH_ONE = "思考与作品一致：每一步思考都要能在最终的回答里找到对应，让读者看清这些想法是怎样一步步“长成”这篇作品的，觉得这篇回答正是这些思考的必然结果。"
_ZH_STYLE = "语言风格：面向未来、真诚、自然、易懂。这是动笔前的分析和规划，多用“我打算”“我应该”这样的计划口吻。语气坦诚，像一位有经验的前辈在分享心得；语言平实，不堆砌专业术语，把复杂的想法讲明白。"
_ZH_LOGIC = "思考逻辑：清晰、层层推进。讲清楚“为什么这样想”和“这样做会带来什么效果”，围绕下面框架的各个环节不断细化；衔接词要多样（如“首先”“接着”“然后”），不要反复用同一个。"
_ZH_FRAME = """思维框架：一个清晰、有深度、细节丰富的思考过程可以包含这些方向：

为什么写？动笔前先想透写作的根本目的：用户字面要求背后真正想要什么；我在对谁说话，读者是什么样的人，有什么困扰和期待，在什么场景下阅读；读完之后，我希望读者在情感、认知和行动上发生什么具体变化。

写什么？围绕写作目标构思核心创意和表达策略，想清楚为了完成请求要向读者传递哪些内容和关键信息，分别用到哪些素材。

怎么写？像画施工图一样设计行文路线。先定文章骨架（比如黄金圈 "Why-How-What"、AIDA 模型 "Attention-Interest-Desire-Action"、故事结构 "开端-发展-高潮-结局"），再安排关键部分：开头怎么破题、抓住读者，主体怎么分层展开、安排论据，结尾怎么收束、升华，并给出清晰的行动号召。"""
ZH["requirements"] = "思考过程的要求：\n" + "\n\n".join(
    f"{i}. {item}" for i, item in enumerate([_ZH_VOICE, _ZH_ONE, _ZH_STYLE, _ZH_LOGIC, _ZH_FRAME], 1)
)
ZH["requirements_scorer"] = "思考过程的要求：\n" + "\n\n".join([_ZH_VOICE, _ZH_STYLE, _ZH_LOGIC, _ZH_FRAME])

ZH["outline"] = """
如果回答比较长，我会先写一个提纲（或者草稿），提纲挈领地列出每个段落或部分的要点、内容和句子的组织方式。
我**绝不照抄、绝不照抄**回答：它只是一个雏形或者大纲。写完提纲后，我再检查一下最终写作时还有哪些细节需要注意。
提纲从`--- 提纲（或者草稿） ---`分隔线之后开始，和前面的思考一起放在同一个`<think></think>`标签内。"""

ZH["draft"] = """
除非请求非常简单，否则我会先写一个草稿：落实到每一个段落，想清楚要点、内容和句子的组织方式。草稿是最终回答的雏形，要比最终回答短得多，既不能笼统空泛，也不能照搬。草稿从`--- 草稿 ---`分隔线之后开始，和前面的思考一起放在同一个`<think></think>`标签内。写完草稿后，我再想想还有哪些细节可以调整、哪些地方可以进一步优化。"""

ZH["reflect"] = (
    """
{num}为了想得更充分、更深入，我会{often}用自我反思和自我质疑来展开细节、换个角度或者回头检查之前的说法，用“不过”“或者”“可能”这类词引出更细致的思考，例如："""
    + _EXAMPLES_ZH
)

ZH["reflect_vary"] = """
这些词我会换着用，不会反复用同一个。我在分析用户需求、确定内容和搭建结构时使用它们，尤其是需要回头检查、换个思路或者展开细节的时候；写提纲和思考快要结束时，我不再用这些词。"""

ZH["plain"] = """
6. 思考要深入、有规划，但要平稳直接地推进：不要使用“等等”“嗯”“也许”“让我想想”“或者”这类犹豫或自我纠正的词。"""

# The reference's Chinese initial prompt ends with one line (brainstorm as an inner monologue, in the
# think tags): no past-tense or formatting rules there. Its scorer prompt has them, after asking for the
# thinking in the tags, and then the first-time line.
ZH["tail_initial"] = """
现在，想象我正在用内心独白的方式头脑风暴……写在`<think></think>`标签中。"""
ZH["tail_scorer"] = """
格式上，把清晰、完整、有逻辑的思考过程写在`<think></think>`标签中。
思考时不要用过去时，不要用过去时：这是写最终回答之前的思考，想的是你将要做什么、需要做什么。
想象你正在出声思考、头脑风暴，把它写成内心独白或者意识流，不要用项目符号、编号或正式的小标题。下面，设想你是第一次看到这个用户请求，开始你的思考（不要暗示你是在解释一个已有的回答）。"""

ZH["refine"] = """你会拿到一个用户请求、一篇目标文案和一段已有的思考过程，然后优化、丰富这段思考过程中的某一个段落。
---> 用户请求
{task}
---> 目标文案
{solution}
---> 思考过程
{before}
----
<replace>
{segment}
</replace>
----
{after}

按下面三步来组织回答：

第一步：找到要修改的段落在思考过程中的位置，结合上下文，说明这个段落主要起什么作用。
第二步：把“目标文案”和“要修改的段落”放在一起读，问自己：这个段落反映的思考，是不是缺了关键的一步？有没有可以进一步优化、细化的内容，让它和目标文案对应得更好？
第三步：改进这个段落（它是思考过程的一部分）。
- 根据第二步的分析修改这个段落，保持原来的语气，放在<refine></refine>标签中。{refine_reflect}
- 如果这个段落的作用是文案的初稿，要特别注意它的逻辑和完整性：初稿不能是笼统的大纲，而要具体地表达内容、陈述观点。想一想它是不是目标文案的一个合适的雏形：既不笼统，也不照抄。

按照上面的要求，只优化下面要替换的部分：
<replace>
{segment}
</replace>

{answer_shape}
注意：1. 尽量避免重复，少用反复出现的衔接词，修改后的内容不要重复上下文已有的内容。
2. 一定要保留原段落开头的几个词，特别是连接词或语气词。
3. {note_c}
"""

ZH["refine_reflect"] = (
    """
- 为了想得更充分、更深入，多用自我反思和自我质疑来展开细节、换个角度或回头检查之前的说法，用“不过”“或者”“可能”这类词引出更细致的思考，例如："""
    + _EXAMPLES_ZH
)
ZH["refine_plain"] = """
- 平稳直接地推进思考，不要使用“等等”“嗯”“也许”“让我想想”这类犹豫或自我纠正的词。"""
ZH["note_reflect"] = "多用反思的触发词，引出更深入的思考。"
ZH["note_plain"] = "推理保持直接，不用犹豫的词。"
ZH["answer_analysis"] = (
    "回答时，先按三步法进行分析，放在`<analyze></analyze>`标签中；最后把修改后的**思考过程的对应段落**放在`<refine></refine>`标签中。"
)
ZH["answer_only"] = "回答时，只给出修改后的**思考过程的对应段落**，放在`<refine></refine>`标签中。"
ZH["refine_opening"] = "我来看看这一段有哪些地方可以修改、优化和补充，让它更贴近目标文案。\n"

# A part named "<part>_scorer" replaces "<part>" in the scorer's prompt (see prompts._think_aloud).
EN["num"] = EN["num_scorer"] = ZH["num"] = "6. "
ZH["num_scorer"] = ""  # the reference's Chinese scorer prompt does not number its requirements
EN["often"] = "regularly"  # the initial prompt; the scorer's prompt says "frequently"
EN["often_scorer"] = "frequently"
ZH["often"] = ""
ZH["often_scorer"] = "多"

WORDING = {"en": EN, "zh": ZH}
