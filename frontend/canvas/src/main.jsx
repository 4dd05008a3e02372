import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";

function App() {
  return <div data-testid="status">Loading the journey canvas</div>;
}

const mount = document.getElementById("journey-canvas");
if (mount) createRoot(mount).render(<App />);
