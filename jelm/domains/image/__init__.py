"""Image evolution: programs that draw a picture close to a target (ELM, arXiv 2206.08896v1, §3).

A program defines ``draw()`` and returns an image as rows of ``[r, g, b]`` pixels in
``[0, 1]``; the domain scores its closeness to a built-in target picture and places it
in the archive by its mean hue and brightness. Modules: :mod:`.codec` (what a program may
return; standard library only, imported by the sandbox), :mod:`.targets`, :mod:`.score`
(the batched JAX evaluation), :mod:`.render`, :mod:`.prompts`, :mod:`.seeds` and
:mod:`.domain` (:class:`~jelm.domains.image.domain.ImageDomain`). Design notes are in
``README.md`` beside this file.
"""
