"""The emotion QA bank (``emotion_qa.csv``, see ``DATACARD.md``) and the code around it: loading
(``datasets``), importing a user's files (``importers``), rewriting answers in another voice
(``synth``), batching (``batches``), and the NRC emotion lexicon (``lexicon``)."""
