"""Provider adapters: translate a provider's wire protocol <-> CallEvent / Command."""
