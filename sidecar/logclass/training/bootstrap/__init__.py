"""`logclass bootstrap`: raw logs and a taxonomy in, a model bundle out, with no labelled rows.

Every line is masked into its template; the LLM is asked once per distinct template (most
frequent first, within a budget), its answers are kept in a teacher file so a second run asks
only what is new, and the answers, weighted by their line counts, are trained with `train`'s
recipe. Unsure answers stay out of the bundle and are listed for review; a reviewed file folds
back in.

Modules: ``inputs`` (reading LOGS), ``templates`` (lines counted per template), ``answers`` (the
teacher file), ``asking`` (the LLM calls), ``outcomes`` (what each template becomes), ``review``
(the review file), ``report`` (``bootstrap-report.json``), ``run`` (the whole command).
"""
