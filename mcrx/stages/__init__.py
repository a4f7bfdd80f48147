"""The stages of ``mcrx extend``, each a function with files in and files out:
:mod:`.encode` → :mod:`.pairs` → :mod:`.train` → :mod:`.evaluate`, ordered by
:mod:`.extend`; :mod:`.context` is what they share."""
