"""Privacy masking: polygons hidden irreversibly, in place, before any other stage sees a frame.

:mod:`.rasterize` turns normalised polygons into conservative pixel masks and a cheap fill plan;
:mod:`.masker` (:class:`~edge.privacy.masker.PrivacyMasker`) applies them to I420 frames, luma and
chroma, solid or pixelated; :mod:`.preview` renders the masked view with outlines for installers.
"""
