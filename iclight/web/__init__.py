"""The web app (`iclight ui`): the Relight and Sequence tabs over one relighter."""
