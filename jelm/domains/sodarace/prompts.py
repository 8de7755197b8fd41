"""The texts of Sodarace's language-model prompts (ELM, arXiv 2206.08896v1, §3.1, §4.2).

The diff model's commit messages are the paper's three, with its odds 40/30/30; the
instructions of prompt mutation and crossover follow OpenELM's Sodarace prompts.
"""

from __future__ import annotations

from jelm.domains.base import Prompts

MSG_STRUCT = "Changed make_walker function."
MSG_PARAMS = "Changed parameters in make_walker function."
MSG_SMALL = "Small change to make_walker function."

#: The commit messages of ``lm_diff`` and the odds of each (the paper's).
COMMIT_MESSAGES: tuple[tuple[str, float], ...] = (
    (MSG_STRUCT, 0.4),
    (MSG_PARAMS, 0.3),
    (MSG_SMALL, 0.3),
)
#: ``lm_prompt``'s instruction after the parent program.
INSTRUCTION = "# Create a new walker by modifying the make_walker function above.\n"
#: ``lm_crossover``'s instruction after the parent programs.
CROSSOVER_INSTRUCTION = "# Create a new walker by combining the walkers above.\n"

PROMPTS = Prompts(
    commit_messages=COMMIT_MESSAGES,
    instruction=INSTRUCTION,
    crossover_instruction=CROSSOVER_INSTRUCTION,
)
