"""Reading and writing on behalf of the user: user-given paths (:mod:`.paths`), output places
checked before any compute (:mod:`.outputs`), crash-safe JSONL and atomic writes (:mod:`.storage`),
safe checkpoint loading and offline lookup of hub files (:mod:`.checkpoints`), and user text
abbreviated in messages (:mod:`.usertext`)."""
