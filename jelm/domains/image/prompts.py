"""The texts of the image domain's language-model prompts (ELM, arXiv 2206.08896v1, §3.1, §3.3).

The diff model's commit messages follow the paper's three for Sodarace, with its odds
40/30/30, written for ``draw``; the instructions of prompt mutation and crossover follow
the Sodarace ones.
"""

from __future__ import annotations

from jelm.domains.base import Prompts

MSG_STRUCT = "Changed draw function."
MSG_PARAMS = "Changed parameters in draw function."
MSG_SMALL = "Small change to draw function."

#: The commit messages of ``lm_diff`` and the odds of each.
COMMIT_MESSAGES: tuple[tuple[str, float], ...] = (
    (MSG_STRUCT, 0.4),
    (MSG_PARAMS, 0.3),
    (MSG_SMALL, 0.3),
)
#: ``lm_prompt``'s instruction after the parent program.
INSTRUCTION = "# Create a new image by modifying the draw function above.\n"
#: ``lm_crossover``'s instruction after the parent programs.
CROSSOVER_INSTRUCTION = "# Create a new image by combining the draw functions above.\n"

PROMPTS = Prompts(
    commit_messages=COMMIT_MESSAGES,
    instruction=INSTRUCTION,
    crossover_instruction=CROSSOVER_INSTRUCTION,
)
