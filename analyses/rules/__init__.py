"""The paper's claims and this project's questions as rules that can fail.

Pure functions over measured numbers (the measures themselves are in ``irm_lens.measures``);
each returns a ``base.Verdict``: the verdict, why, and the effect sizes it was decided on. Every
verdict of every rule is reached in the tests.

    base        Verdict, MIN_RUNS
    paper       the paper's claims on the output map: striation, consistency, dominance
    acting      the paper's claims on how the IRM acts: residual architecture, LM head, timing
    mechanism   where a dominant coordinate comes from: rotated host, SGD, masking, layer sets
    explain     why one index: the loss quirks (padding, concentration) and the predictor
    steering    is an IRM a fixed steering vector
    budget      the smallest step budget at which every emotion is aligned
"""
