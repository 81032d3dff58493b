"""Preparation steps: raw releases → the features robult trains on, written in the user format.

The data layer (:mod:`robult.data`) reads arrays; turning raw images and text into arrays needs encoders (some of them
:mod:`robult.modules`), image I/O and a cache, which live here:

- :mod:`robult.prepare.encoders`: text encoders, the seeded :class:`SmallCNN` image encoder, :func:`encode_images`;
- :mod:`robult.prepare.cache`: the on-disk feature cache (``$ROBULT_CACHE_DIR`` or ``~/.cache/robult/features``);
- :mod:`robult.prepare.features`: raw samples → ``image`` / ``text`` vector modalities with presence masks;
- :mod:`robult.prepare.food101`, :mod:`robult.prepare.hateful_memes`: the two raw releases. ``load_*`` returns a
  :class:`robult.data.DatasetBundle` (registered as ``food101`` / ``hateful_memes``); ``prepare_*`` writes the same
  splits in the user format, which :func:`robult.data.user.load_user_dataset` reads back.
"""
