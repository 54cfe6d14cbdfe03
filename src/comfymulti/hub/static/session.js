// ComfyMulti: the workshop account in the top bar in place of the frontend's Comfy.org login
// (a participant must never type the workshop password there), with a "Log out" that ends the
// session on the hub (POST /logout) and returns to the login page.
import { app } from "../../scripts/app.js";

const user = decodeURIComponent(location.pathname.split("/")[2] || "");

const style = document.createElement("style");
style.textContent = '[data-testid="login-button"], [data-testid="login-button-popover"]' +
  " { display: none !important; }";
document.head.appendChild(style);

function logOut() {
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/logout";
  document.body.appendChild(form);
  form.submit();
}

app.registerExtension({
  name: "ComfyMulti.Session",
  actionBarButtons: [
    {icon: "icon-[lucide--user] size-4", label: user,
     tooltip: `Signed in to the workshop as ${user}`, onClick: () => {}},
    {icon: "icon-[lucide--log-out] size-4", label: "Log out", tooltip: "Log out",
     onClick: logOut},
  ],
});
