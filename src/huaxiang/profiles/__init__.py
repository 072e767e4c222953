"""profiles stage: attributes, consent and groups keyed by identifier; the 360 view.

Public entry points (import them from their modules; this package imports nothing so that the
table definitions stay cheap to load):

* ``profiles.sink.ProfileSink``: the loader's EventSink (identify/group traits, consent).
* ``profiles.attributes.write_attributes`` / ``write_attribute_table``: attributes from imports.
* ``profiles.consent.write_consents`` / ``write_consent_table`` / ``consent_of``.
* ``profiles.view.profile_360`` / ``list_profiles`` / ``set_attributes`` / ``set_consent``.
* ``profiles.unmerge.unmerge_person``: split identifiers off through the identity stage.
* Views for later stages: ``person_attributes``, ``attribute_candidates``, ``person_consent``.
"""
