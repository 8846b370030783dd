"""The emotion QA bank (``emotion_qa.csv``, see ``DATACARD.md``) and the code around it: loading
(``datasets``), importing a user's files (``importers``), batching (``batches``), and the NRC
emotion lexicon (``lexicon``). Rewriting answers in another voice runs a host: that is
``irm_lens.synth``, beside the other modules that run one."""
