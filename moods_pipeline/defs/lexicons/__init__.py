"""Lexicons: the job that publishes the project's lexicon documents."""
