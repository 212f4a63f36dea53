// The confirmation dialog before any action that changes an instance or a letter.

const $ = (id) => document.getElementById(id);

/** Opens the dialog; resolves {ok, reason}. `withReason` shows a reason field. */
export function confirmAction({ title, message, action, withReason = false }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-message").textContent = message;
  $("confirm-yes").textContent = action;
  $("confirm-reason-label").hidden = !withReason;
  $("confirm-reason").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve({ ok: dialog.returnValue === "yes", reason: $("confirm-reason").value.trim() }),
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
  });
}
